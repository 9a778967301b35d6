"""The processes of `sae-serve`: one server, or a supervisor forking workers that share its port."""
