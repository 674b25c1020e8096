/*
 * rbtree.c — intrusive red-black tree: rebalancing after insert and erase, in-order walks, and an
 * invariant checker for tests. Written from the textbook (CLRS-style) rules with NULL leaves.
 */
#include "util/rbtree.h"

static bool is_black(const struct ubt_rb_node *n)
{
	return !n || n->color == UBT_RB_BLACK;
}

/* Make @new take @old's place under @old's parent (or as root). */
static void replace_child(struct ubt_rb_root *root, struct ubt_rb_node *old, struct ubt_rb_node *new,
			  struct ubt_rb_node *parent)
{
	if (!parent)
		root->node = new;
	else if (parent->left == old)
		parent->left = new;
	else
		parent->right = new;
}

static void rotate_left(struct ubt_rb_root *root, struct ubt_rb_node *x)
{
	struct ubt_rb_node *y = x->right;

	x->right = y->left;
	if (y->left)
		y->left->parent = x;
	y->parent = x->parent;
	replace_child(root, x, y, x->parent);
	y->left = x;
	x->parent = y;
}

static void rotate_right(struct ubt_rb_root *root, struct ubt_rb_node *x)
{
	struct ubt_rb_node *y = x->left;

	x->left = y->right;
	if (y->right)
		y->right->parent = x;
	y->parent = x->parent;
	replace_child(root, x, y, x->parent);
	y->right = x;
	x->parent = y;
}

void ubt_rb_insert_color(struct ubt_rb_root *root, struct ubt_rb_node *n)
{
	struct ubt_rb_node *p, *g, *u;

	while ((p = n->parent) && p->color == UBT_RB_RED) {
		g = p->parent; /* a red node is never the root */
		if (p == g->left) {
			u = g->right;
			if (!is_black(u)) {
				p->color = u->color = UBT_RB_BLACK;
				g->color = UBT_RB_RED;
				n = g;
				continue;
			}
			if (n == p->right) {
				rotate_left(root, p);
				n = p;
				p = n->parent;
			}
			p->color = UBT_RB_BLACK;
			g->color = UBT_RB_RED;
			rotate_right(root, g);
		} else {
			u = g->left;
			if (!is_black(u)) {
				p->color = u->color = UBT_RB_BLACK;
				g->color = UBT_RB_RED;
				n = g;
				continue;
			}
			if (n == p->left) {
				rotate_right(root, p);
				n = p;
				p = n->parent;
			}
			p->color = UBT_RB_BLACK;
			g->color = UBT_RB_RED;
			rotate_left(root, g);
		}
	}
	root->node->color = UBT_RB_BLACK;
}

void ubt_rb_insert_before(struct ubt_rb_root *root, struct ubt_rb_node *node, struct ubt_rb_node *pos)
{
	struct ubt_rb_node *p = pos->left;

	if (!p) {
		ubt_rb_link(node, pos, &pos->left);
	} else {
		while (p->right)
			p = p->right;
		ubt_rb_link(node, p, &p->right);
	}
	ubt_rb_insert_color(root, node);
}

void ubt_rb_insert_after(struct ubt_rb_root *root, struct ubt_rb_node *node, struct ubt_rb_node *pos)
{
	struct ubt_rb_node *p = pos->right;

	if (!p) {
		ubt_rb_link(node, pos, &pos->right);
	} else {
		while (p->left)
			p = p->left;
		ubt_rb_link(node, p, &p->left);
	}
	ubt_rb_insert_color(root, node);
}

/* Restore the black height after a black node was removed above @x (which may be NULL). */
static void erase_fixup(struct ubt_rb_root *root, struct ubt_rb_node *x, struct ubt_rb_node *parent)
{
	struct ubt_rb_node *w;

	while (x != root->node && is_black(x)) {
		if (x == parent->left) {
			w = parent->right;
			if (w->color == UBT_RB_RED) {
				w->color = UBT_RB_BLACK;
				parent->color = UBT_RB_RED;
				rotate_left(root, parent);
				w = parent->right;
			}
			if (is_black(w->left) && is_black(w->right)) {
				w->color = UBT_RB_RED;
				x = parent;
				parent = x->parent;
				continue;
			}
			if (is_black(w->right)) {
				w->left->color = UBT_RB_BLACK;
				w->color = UBT_RB_RED;
				rotate_right(root, w);
				w = parent->right;
			}
			w->color = parent->color;
			parent->color = UBT_RB_BLACK;
			w->right->color = UBT_RB_BLACK;
			rotate_left(root, parent);
		} else {
			w = parent->left;
			if (w->color == UBT_RB_RED) {
				w->color = UBT_RB_BLACK;
				parent->color = UBT_RB_RED;
				rotate_right(root, parent);
				w = parent->left;
			}
			if (is_black(w->left) && is_black(w->right)) {
				w->color = UBT_RB_RED;
				x = parent;
				parent = x->parent;
				continue;
			}
			if (is_black(w->left)) {
				w->right->color = UBT_RB_BLACK;
				w->color = UBT_RB_RED;
				rotate_left(root, w);
				w = parent->left;
			}
			w->color = parent->color;
			parent->color = UBT_RB_BLACK;
			w->left->color = UBT_RB_BLACK;
			rotate_right(root, parent);
		}
		x = root->node;
		break;
	}
	if (x)
		x->color = UBT_RB_BLACK;
}

void ubt_rb_erase(struct ubt_rb_root *root, struct ubt_rb_node *z)
{
	struct ubt_rb_node *y = z, *x, *x_parent;
	int y_color;

	/* y: the node actually unlinked from its place — z itself, or z's successor. */
	if (z->left && z->right) {
		y = z->right;
		while (y->left)
			y = y->left;
	}
	x = y->left ? y->left : y->right;
	x_parent = y->parent;
	if (x)
		x->parent = x_parent;
	replace_child(root, y, x, x_parent);
	y_color = y->color;

	if (y != z) {
		/* The successor takes z's place, links and color. */
		if (x_parent == z)
			x_parent = y;
		y->parent = z->parent;
		y->left = z->left;
		y->right = z->right;
		y->color = z->color;
		replace_child(root, z, y, z->parent);
		if (y->left)
			y->left->parent = y;
		if (y->right)
			y->right->parent = y;
	}
	if (y_color == UBT_RB_BLACK)
		erase_fixup(root, x, x_parent);
	ubt_rb_clear_node(z);
}

struct ubt_rb_node *ubt_rb_first(const struct ubt_rb_root *root)
{
	struct ubt_rb_node *n = root->node;

	if (!n)
		return NULL;
	while (n->left)
		n = n->left;
	return n;
}

struct ubt_rb_node *ubt_rb_last(const struct ubt_rb_root *root)
{
	struct ubt_rb_node *n = root->node;

	if (!n)
		return NULL;
	while (n->right)
		n = n->right;
	return n;
}

struct ubt_rb_node *ubt_rb_next(const struct ubt_rb_node *n)
{
	const struct ubt_rb_node *p;

	if (n->right) {
		n = n->right;
		while (n->left)
			n = n->left;
		return (struct ubt_rb_node *)n;
	}
	while ((p = n->parent) && n == p->right)
		n = p;
	return (struct ubt_rb_node *)p;
}

struct ubt_rb_node *ubt_rb_prev(const struct ubt_rb_node *n)
{
	const struct ubt_rb_node *p;

	if (n->left) {
		n = n->left;
		while (n->right)
			n = n->right;
		return (struct ubt_rb_node *)n;
	}
	while ((p = n->parent) && n == p->left)
		n = p;
	return (struct ubt_rb_node *)p;
}

/* Black height of the subtree at @n, or -1 when an invariant is broken; counts nodes in *@count. */
static long check_subtree(const struct ubt_rb_node *n, const struct ubt_rb_node *parent, long *count)
{
	long lh, rh;

	if (!n)
		return 1;
	if (n->parent != parent)
		return -1;
	if (n->color != UBT_RB_RED && n->color != UBT_RB_BLACK)
		return -1;
	if (n->color == UBT_RB_RED && (!is_black(n->left) || !is_black(n->right)))
		return -1;
	(*count)++;
	lh = check_subtree(n->left, n, count);
	rh = check_subtree(n->right, n, count);
	if (lh < 0 || rh < 0 || lh != rh)
		return -1;
	return lh + (n->color == UBT_RB_BLACK);
}

long ubt_rb_check(const struct ubt_rb_root *root)
{
	long count = 0;

	if (root->node && root->node->color != UBT_RB_BLACK)
		return -1;
	if (check_subtree(root->node, NULL, &count) < 0)
		return -1;
	return count;
}
