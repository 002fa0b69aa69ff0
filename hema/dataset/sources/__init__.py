"""The sources hema builds, one module each, in one schema (`hema-dataset build --source NAME`):
`mll23`, `acevedo20`, `matek19`, `bmc`. Each declares a `Source` (`declaration`: classes, lineages,
harmonised labels, layout, licence, citation, pixel size, card text), its builder (a thin
CellImageBuilder subclass) and where its raw archives are downloaded from, if anywhere. The registry
of builders is hema.dataset.BUILDERS.
"""
