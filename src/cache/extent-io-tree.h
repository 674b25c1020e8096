/*
 * extent-io-tree.h — the per-inode extent io tree: which byte ranges of a file are locked,
 * dirty, delalloc, uptodate, ... as disjoint ranges with a set of state bits each.
 *
 * Representation: a red-black tree (util/rbtree) of struct ubt_extent_state, ordered by start,
 * pairwise disjoint, every state has at least one bit (ranges without bits are not stored, so
 * memory is freed as ranges clear). Adjacent states (a->end + 1 == b->start) with identical bits
 * are always merged — the tree is maximally merged after every operation. Ends are inclusive, as
 * in btrfs. Operations are O(log n + k) for k states touched.
 *
 * Bits (the set the data write path needs; btrfs names):
 *   LOCKED       range locked for I/O or a metadata update (writeback, read, truncate, dio,
 *                fixup); taken with ubt_lock_extent, which waits. Not owned by a thread: the
 *                thread that locks may differ from the one that unlocks (writeback locks, the
 *                ordered-extent completion unlocks), so re-locking a range you hold deadlocks
 *                (ubt_try_lock_extent returns -EAGAIN instead).
 *   DIRTY        (reserved for metadata-style trees; unused by the inode tree for now)
 *   DELALLOC     buffered write reserved space and has not been allocated on disk yet;
 *                writeback turns it into an ordered extent. Set/clear are reported to the
 *                owner's callbacks (space accounting).
 *   DELALLOC_NEW delalloc over a range that was a hole/beyond EOF: new bytes for the inode's
 *                st_blocks accounting at ordered-extent completion
 *   UPTODATE     (inode tree of page-less callers; the page cache keeps its own per-page flag)
 *   NORESERVE    NOCOW/prealloc write that reserved no data space: clearing DELALLOC must not
 *                release data space for it
 *   DEFRAG       range marked by (auto)defrag to be rewritten
 *   NODATASUM    writes of this range carry no checksums (NODATASUM/NOCOW inode, or dio
 *                into a prealloc extent)
 * Control bits (never stored; given to ubt_clear_extent_bit, passed on to clear_bits_cb):
 *   CLEAR_DATA_RESV  clearing DELALLOC also releases the data reservation
 *   CLEAR_META_RESV  clearing DELALLOC also releases the metadata reservation
 *   DO_ACCOUNTING    both
 *
 * ORDERED is not a bit here: as in btrfs, ordered extents live in their own per-inode tree
 * (write/), because each carries data (disk location, bytes left, completion, errors, refs) that
 * a bit cannot.
 *
 * Callbacks (optional, tree->ops): called under the tree's mutex, for each piece whose bits change
 * among tree->cb_bits (DELALLOC by default): set_bits_cb(private, start, end, newly set bits),
 * clear_bits_cb(private, start, end, bits actually cleared | control bits). merge_cb and split_cb
 * report merges and splits of states that carry cb_bits (btrfs's outstanding extent counting).
 * Callbacks must not call back into this tree, and must not sleep for long.
 *
 * Life of a range in the data write path (the states the bits walk through):
 *   (none) --buffered write: reserve, set DELALLOC [+DELALLOC_NEW]--> DELALLOC
 *   DELALLOC --writeback: ubt_find_lock_delalloc_range--> DELALLOC|LOCKED
 *   DELALLOC|LOCKED --allocate, create ordered extent, clear DELALLOC (space moves to the
 *       ordered extent)--> LOCKED --pages submitted: unlock--> (none)
 *   DELALLOC --truncate/punch/error: clear DELALLOC with DO_ACCOUNTING--> (none)
 *
 * Hook point: "extent_io.lock_wait" (point_arg = the tree), reached without tree->lock each time
 * ubt_lock_extent finds its range locked and is about to wait; a test pauses there to know a
 * thread is blocked on a range.
 *
 * Lock order: tree->lock is taken inside the page lock and the inode's locks, and outside
 * whatever the callbacks take (the space-reservation lock). lock waits drop tree->lock while
 * waiting on tree->wait.
 *
 * Cached states: functions taking struct ubt_extent_state **cached may store a reference to the
 * state they worked on (they do when *cached is NULL and the state is LOCKED after the call); a
 * later call on the same range starts from it instead of searching. The caller drops the
 * reference with ubt_free_extent_state() (ubt_unlock_extent / clearing LOCKED drop it for them).
 */
#ifndef UBT_CACHE_EXTENT_IO_TREE_H
#define UBT_CACHE_EXTENT_IO_TREE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "util/compat.h"
#include "util/rbtree.h"

#define UBT_EXTENT_LOCKED (1u << 0)
#define UBT_EXTENT_DIRTY (1u << 1)
#define UBT_EXTENT_DELALLOC (1u << 2)
#define UBT_EXTENT_DELALLOC_NEW (1u << 3)
#define UBT_EXTENT_UPTODATE (1u << 4)
#define UBT_EXTENT_NORESERVE (1u << 5)
#define UBT_EXTENT_DEFRAG (1u << 6)
#define UBT_EXTENT_NODATASUM (1u << 7)
#define UBT_EXTENT_STORED_BITS ((1u << 8) - 1)
/* control bits */
#define UBT_EXTENT_CLEAR_DATA_RESV (1u << 16)
#define UBT_EXTENT_CLEAR_META_RESV (1u << 17)
#define UBT_EXTENT_DO_ACCOUNTING (UBT_EXTENT_CLEAR_DATA_RESV | UBT_EXTENT_CLEAR_META_RESV)
#define UBT_EXTENT_CONTROL_BITS (UBT_EXTENT_DO_ACCOUNTING)

struct ubt_extent_state {
	struct ubt_rb_node node; /* unlinked (ubt_rb_is_linked false) once out of the tree */
	u64 start;
	u64 end; /* inclusive */
	unsigned state;
	atomic_int refs; /* one for the tree, one per cached pointer */
};

struct ubt_extent_io_ops {
	void (*set_bits_cb)(void *private, u64 start, u64 end, unsigned bits);
	void (*clear_bits_cb)(void *private, u64 start, u64 end, unsigned bits);
	/* @a ends where @b starts; they are about to become one state [a->start, b->end]. */
	void (*merge_cb)(void *private, const struct ubt_extent_state *a, const struct ubt_extent_state *b);
	/* @orig is about to become [orig->start, split - 1] and [split, orig->end]. */
	void (*split_cb)(void *private, const struct ubt_extent_state *orig, u64 split);
};

struct ubt_extent_io_tree {
	pthread_mutex_t lock;
	pthread_cond_t wait; /* LOCKED cleared somewhere */
	struct ubt_rb_root states;
	unsigned long nr_states;
	const struct ubt_extent_io_ops *ops;
	void *private;
	unsigned cb_bits; /* bits whose changes the callbacks hear about */
};

enum ubt_test_mode { UBT_TEST_ANY, UBT_TEST_ALL };

void ubt_extent_io_tree_init(struct ubt_extent_io_tree *tree, const struct ubt_extent_io_ops *ops, void *private);
/* Free every state (no callbacks). Nobody may be waiting on or using the tree. */
void ubt_extent_io_tree_release(struct ubt_extent_io_tree *tree);

void ubt_free_extent_state(struct ubt_extent_state *state);

/* Set @bits on [start, end]. 0 or -ENOMEM (then the tree is unchanged past the failing piece,
 * all of it consistent). */
int ubt_set_extent_bit(struct ubt_extent_io_tree *tree, u64 start, u64 end, unsigned bits,
		       struct ubt_extent_state **cached);
/* Clear @bits (plus control bits for the callback) on [start, end]; clearing LOCKED wakes
 * waiters and drops *cached. 0 or -ENOMEM (a split could not be allocated). */
int ubt_clear_extent_bit(struct ubt_extent_io_tree *tree, u64 start, u64 end, unsigned bits,
			 struct ubt_extent_state **cached);
/* ALL: every byte of [start, end] has all @bits; ANY: some byte has some of @bits. */
bool ubt_test_range_bit(struct ubt_extent_io_tree *tree, u64 start, u64 end, unsigned bits,
			enum ubt_test_mode mode);
/* First state ending at or after @start that has any of @bits: its range in *found_start/end
 * (*found_start may be below @start). 0, or -ENOENT. */
int ubt_find_first_extent_bit(struct ubt_extent_io_tree *tree, u64 start, unsigned bits, u64 *found_start,
			      u64 *found_end);
/* Bytes in [*start, search_end] having any of @bits, counting at most @max_bytes; *start is set
 * to the first such byte (unchanged when none). */
u64 ubt_count_range_bits(struct ubt_extent_io_tree *tree, u64 *start, u64 search_end, u64 max_bytes,
			 unsigned bits);
/* In the window [*start, *end]: the first DELALLOC byte and the contiguous DELALLOC run from it,
 * clipped to the window and to @max_bytes (0: no limit). true with the run in [*start, *end]; false when no
 * byte of the window is delalloc (then *start and *end are unchanged). */
bool ubt_find_delalloc_range(struct ubt_extent_io_tree *tree, u64 *start, u64 *end, u64 max_bytes);
/* As ubt_find_delalloc_range, and lock the run; returns with the run LOCKED and still entirely
 * DELALLOC (retries when it changed while waiting for the lock). */
bool ubt_find_lock_delalloc_range(struct ubt_extent_io_tree *tree, u64 *start, u64 *end, u64 max_bytes,
				  struct ubt_extent_state **cached);

/* Wait until no byte of [start, end] is LOCKED, then lock it all (atomically). */
int ubt_lock_extent(struct ubt_extent_io_tree *tree, u64 start, u64 end, struct ubt_extent_state **cached);
/* Lock [start, end] if no byte is LOCKED now; -EAGAIN (nothing changed) otherwise. */
int ubt_try_lock_extent(struct ubt_extent_io_tree *tree, u64 start, u64 end, struct ubt_extent_state **cached);
/* Clear LOCKED on [start, end] and wake waiters. */
int ubt_unlock_extent(struct ubt_extent_io_tree *tree, u64 start, u64 end, struct ubt_extent_state **cached);

/* Tests and debugging: check every invariant above (ordering, disjointness, merging, no empty
 * states, red-black rules, nr_states); 0 or -EUCLEAN. Visit every state in order. */
int ubt_extent_io_tree_check(struct ubt_extent_io_tree *tree);
void ubt_extent_io_tree_for_each(struct ubt_extent_io_tree *tree,
				 void (*fn)(void *arg, u64 start, u64 end, unsigned bits), void *arg);

#endif
