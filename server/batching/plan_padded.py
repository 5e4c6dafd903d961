"""The batching rule for models that pad (ragged.py): any lengths may merge, grouped by length under a token budget.

Why this rule: requests of a sequence model rarely share a length, so Triton's rule (merge only equal shapes) runs
nearly every request alone. Here the head of the queue (highest priority, then oldest) always runs in the next
batch, so nothing starves and nobody waits for same-length company; the others join it nearest length first
(TEI fills a batch FIFO under a token budget; Infinity sorts a bounded window by length), so when rows or tokens
run out, the requests left over are those that would have added the most padding. A batch costs rows x its
longest length (what a padded model computes), bounded by `max_batch_tokens`, and at most `max_padding` of those
tokens may be padding (a request that would exceed it waits for a batch nearer its length); a single request is
never split, so one above the budget runs alone. Triton's preferred sizes and queue delay apply as in plan.py.
"""

from __future__ import annotations

from collections.abc import Iterable

from server.batching.plan import Entry, Plan, settle

WINDOW_PER_ROW = 4  # candidates looked at per max_batch_size row: bounds the work per decision on a long queue


def plan_padded_batch(ordered: Iterable[Entry], now_ns: int, max_batch: int, preferred: frozenset[int],
                      delay_ns: int, max_tokens: int, max_padding: float = 1.0) -> Plan:
    """Choose the next batch from `ordered` (highest priority first, then arrival)."""
    window = max(64, WINDOW_PER_ROW * max_batch)
    head: Entry | None = None
    others: list[Entry] = []
    for entry in ordered:
        if head is None:
            head = entry
        elif entry.key == head.key:
            others.append(entry)
            if len(others) >= window:
                break
    if head is None:
        return Plan()
    chosen = [head]
    rows, longest = head.item.rows, head.length
    real = rows * longest  # real tokens in the batch (each request's own rows x its length)
    full = rows >= max_batch
    preferred_len = 1 if rows in preferred else 0
    # nearest length first; ties keep queue order (sorted is stable)
    for entry in sorted(others, key=lambda e: abs(e.length - head.length)):
        if full and rows >= max_batch:
            break
        grown_rows, grown_longest = rows + entry.item.rows, max(longest, entry.length)
        grown_real, grown_total = real + entry.item.rows * entry.length, grown_rows * grown_longest
        if (grown_rows > max_batch or grown_total > max_tokens
                or grown_total - grown_real > max_padding * grown_total):
            full = True  # the batch is as large as it may be for this entry; a shorter or smaller one may fit
            continue
        chosen.append(entry)
        rows, longest, real = grown_rows, grown_longest, grown_real
        if rows in preferred:
            preferred_len = len(chosen)
        if rows >= max_batch:
            full = True
    return settle(chosen, full, preferred_len, now_ns, delay_ns)
