"""`python -m mnistpipe.tune_worker` runs the `mnistpipe-tune-worker` command (`mnistpipe.commands.tune_worker`).

`tune.run_local_workers` starts its local workers under this module name. This file only forwards the command
line and goes once tune.py starts `python -m mnistpipe.commands.tune_worker` itself.
"""

if __name__ == "__main__":
    import runpy

    runpy.run_module("mnistpipe.commands.tune_worker", run_name="__main__", alter_sys=True)
