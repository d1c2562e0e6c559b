"""ImageNet backbones (registry, weights, blocks), the new head and pooled-feature models, the
classifier, and the package's registered Keras layers."""
