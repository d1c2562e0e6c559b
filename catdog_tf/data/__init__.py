"""Kaggle files -> TFRecord shards -> tf.data batches: name rules (kaggle), record format (schema),
discovery (sources), checks/splits/shards/manifest (records), the input pipeline, augmentation layers."""
