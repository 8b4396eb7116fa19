"""Payload stores: the UnixFS importer, the embedded blockstore, CARs, Kubo and pinning adapters."""
