"""Example and cluster YAML configs, packaged as `videopoet.configs` so an installed wheel finds them."""
