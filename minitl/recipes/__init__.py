"""Recipes: whole transfer-learning runs built from the library's parts, shared by the
command line (`minitl demo`, `minitl finetune`) and the experiments in
`benchmarks/transfer/`."""
