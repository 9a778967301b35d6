"""The GPU check: train, compare with the CPU, serve and measure on a GPU machine, and the bundle it runs from."""
