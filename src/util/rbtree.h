/*
 * rbtree.h — an intrusive red-black tree (written for ubtrfs from the textbook rules; no GPL code).
 *
 * The tree does not compare keys: the caller walks down from root->node to find where a new node
 * belongs, links it there with ubt_rb_link() and calls ubt_rb_insert_color() to rebalance.
 * ubt_rb_insert_before/after() put a node next to an existing one in order (O(log n), used for
 * splitting ranges). Erase, first/last, next/prev are the usual. Nodes are embedded in the
 * caller's structures (ubt_rb_entry() gets back to them); the tree never allocates.
 *
 * Invariants (checked by ubt_rb_check() for tests): the root is black; a red node has no red
 * child; every path from a node down to a missing child passes the same number of black nodes;
 * child->parent links agree with parent->left/right. Hence the height is at most 2 log2(n+1).
 *
 * Not thread-safe: the owner of the tree serialises access.
 */
#ifndef UBT_UTIL_RBTREE_H
#define UBT_UTIL_RBTREE_H

#include <stdbool.h>
#include <stddef.h>

enum { UBT_RB_RED = 0, UBT_RB_BLACK = 1 };

struct ubt_rb_node {
	struct ubt_rb_node *parent;
	struct ubt_rb_node *left;
	struct ubt_rb_node *right;
	int color;
};

struct ubt_rb_root {
	struct ubt_rb_node *node;
};

#define UBT_RB_ROOT ((struct ubt_rb_root){ NULL })
#define ubt_rb_entry(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
#define ubt_rb_entry_safe(ptr, type, member) ({ __typeof__(ptr) _p = (ptr); _p ? ubt_rb_entry(_p, type, member) : NULL; })

/* A node not in any tree points to itself as parent (after ubt_rb_clear_node / erase). */
static inline void ubt_rb_clear_node(struct ubt_rb_node *n) { n->parent = n; }
static inline bool ubt_rb_is_linked(const struct ubt_rb_node *n) { return n->parent != n; }
static inline bool ubt_rb_empty(const struct ubt_rb_root *root) { return root->node == NULL; }

/* Attach @node as the child at *@link of @parent (NULL parent: the root link). Then color it. */
static inline void ubt_rb_link(struct ubt_rb_node *node, struct ubt_rb_node *parent, struct ubt_rb_node **link)
{
	node->parent = parent;
	node->left = node->right = NULL;
	node->color = UBT_RB_RED;
	*link = node;
}

void ubt_rb_insert_color(struct ubt_rb_root *root, struct ubt_rb_node *node);
/* Insert @node immediately before / after @pos in order (rebalances). */
void ubt_rb_insert_before(struct ubt_rb_root *root, struct ubt_rb_node *node, struct ubt_rb_node *pos);
void ubt_rb_insert_after(struct ubt_rb_root *root, struct ubt_rb_node *node, struct ubt_rb_node *pos);
/* Remove @node (rebalances); afterwards ubt_rb_is_linked(node) is false. */
void ubt_rb_erase(struct ubt_rb_root *root, struct ubt_rb_node *node);

struct ubt_rb_node *ubt_rb_first(const struct ubt_rb_root *root);
struct ubt_rb_node *ubt_rb_last(const struct ubt_rb_root *root);
struct ubt_rb_node *ubt_rb_next(const struct ubt_rb_node *node);
struct ubt_rb_node *ubt_rb_prev(const struct ubt_rb_node *node);

/* Verify the invariants above; returns the number of nodes, or -1 when broken (tests only). */
long ubt_rb_check(const struct ubt_rb_root *root);

#endif
