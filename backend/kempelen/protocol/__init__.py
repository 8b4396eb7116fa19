"""Pure code every role shares: EIP-712 messages, CIDs, event decoding, Merkle trees."""
