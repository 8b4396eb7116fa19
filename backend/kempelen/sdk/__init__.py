"""Python SDK: Requester and Worker, shaped like the MTurk API, over the contracts and the relay."""
