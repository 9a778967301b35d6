"""`python -m service`: the same as `sae-serve`."""

from service.workers.main import main

main()
