"""A package-style batchframe project: send one (simulated) webhook per line of a file.

Run it with:  batchframe exec examples/webhooks -c config_dev
"""
