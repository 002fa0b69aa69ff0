"""hema: blood-cell image datasets (MLL23 and the sets it is compared with) on the Hugging Face Hub,
and the models that read them.

A library under four command lines (hema.cli: hema-dataset, hema-train, hema-evaluate, hema-space),
its folders its architecture, each depending only on those before it:

    base       errors, hostile-folder reading, atomic writes, forked work, imaging, figures, Hub,
               the harmonised taxonomy, the published-build contract both wings read
    dedup      image signatures, duplicates, smear fields, vector search
    synthetic  the offline sample: its painter and its manifest
    dataset    sources, download, scan, catalog, splits, configs, schema, shards, card, publish, builder
    model      data, inputs, classifier, optimisation, checkpoints, evaluation, calibration, card, folder
    cli        the command lines: the only layer that uses both wings
"""

__version__ = "0.3.0"
