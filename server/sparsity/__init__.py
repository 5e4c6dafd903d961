"""The 2:4 storage format: pure functions between a dense 2:4 weight and its (values, mask) pair."""

from server.sparsity.compress import compress, decompress, is_2_4, mask_of, pack_mask, unpack_mask

__all__ = ["compress", "decompress", "is_2_4", "mask_of", "pack_mask", "unpack_mask"]
