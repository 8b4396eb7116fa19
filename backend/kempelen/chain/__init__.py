"""Typed web3.py access to the Kempelen contracts: artifacts, local chain, deployment, transactions."""
