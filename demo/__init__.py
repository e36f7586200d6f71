"""Demo runs for tb-varupdate: `python -m demo --logdir DIR`.

`demo.scenarios` trains one tiny model per way a variable can fail to update
(and a few healthy look-alikes); `demo.run_all` writes them all under one
logdir for TensorBoard's "Variable Updates" tab and `tb-varupdate check`.
"""
