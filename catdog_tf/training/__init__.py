"""The one trainer (fit) and its multi-worker loop, TensorBoard, strategy choice, the activation
cache, two-stage train and k-fold heads."""
