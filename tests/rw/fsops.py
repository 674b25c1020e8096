#!/usr/bin/env python3
"""fsops.py — a seeded random workload of real syscalls, applied in lockstep to two trees.

    fsops.py [--seed N] [--ops N] [--batch N] [--max-names N] [--mix full|mutate]
             [--remount-every N --remount CMD] TEST REF

TEST is the tree under test (a directory inside a `ubtrfs mount`), REF a reference directory on
another filesystem holding the same tree. Every operation is run on both; the outcome (return
value or errno, data read back) must be the same, or the program stops with the op that
differed. Every BATCH ops the TEST tree's filesystem commits (fsync of a directory = ubt_sync).

Operations: create (O_CREAT|O_EXCL, some with data), mkdir, symlink, mkfifo, mknod (char/block),
pwrite / O_APPEND / O_TRUNC writes, truncate, link, unlink, rmdir (also of the wrong kind),
rename / renameat2 NOREPLACE / EXCHANGE, chmod, chown, utime with ns, setxattr (CREATE/REPLACE),
removexattr, read-back compare, readdir compare, unlink while open (write and read the orphan).
--mix mutate: renames, deletes, new files, appends and truncates only (for existing trees).
--remount CMD: every --remount-every ops, run the shell command CMD (which unmounts and mounts
TEST's filesystem again: inode numbers restart, caches are cold, nothing may change).
"""
import ctypes
import errno
import os
import random
import stat
import subprocess
import sys

libc = ctypes.CDLL(None, use_errno=True)
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


def renameat2(a, b, flags):
    if libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), flags):
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), a)


class Diverged(Exception):
    pass


class Work:
    def __init__(self, test, ref, seed, max_names, mix):
        self.roots = (test, ref)
        self.rng = random.Random(seed)
        self.max_names = max_names
        self.mix = mix
        self.ops = 0
        # names relative to the roots ("" is the root); kind: d f l p c
        self.names = []
        self.index = {}
        for dirpath, dirs, files in os.walk(ref):
            dirs.sort()
            rel = os.path.relpath(dirpath, ref)
            rel = "" if rel == "." else rel
            for n in sorted(dirs + files):
                p = os.path.join(rel, n)
                self.add(p, self.kind_of(os.path.join(ref, p)))

    # ---- bookkeeping ----
    @staticmethod
    def kind_of(path):
        m = os.lstat(path).st_mode
        return {stat.S_IFDIR: "d", stat.S_IFREG: "f", stat.S_IFLNK: "l", stat.S_IFIFO: "p"}.get(stat.S_IFMT(m), "c")

    def add(self, p, kind):
        if p in self.index:
            self.names[self.index[p]] = (p, kind)
            return
        self.index[p] = len(self.names)
        self.names.append((p, kind))

    def remove(self, p):
        i = self.index.pop(p)
        last = self.names.pop()
        if i < len(self.names):
            self.names[i] = last
            self.index[last[0]] = i

    def move_prefix(self, old, new):
        """Rename the name old (and everything below it) to new."""
        moved = [(p, k) for p, k in self.names if p == old or p.startswith(old + "/")]
        for p, _ in moved:
            self.remove(p)
        for p, k in moved:
            self.add(new + p[len(old):], k)

    def pick(self, kinds=None, root_ok=False):
        if not self.names:
            return "" if root_ok else None
        for _ in range(30):
            p, k = self.names[self.rng.randrange(len(self.names))]
            if kinds is None or k in kinds:
                return p
        return "" if root_ok and kinds and "d" in kinds else None

    def pick_dir(self):
        if self.rng.random() < 0.15:
            return ""
        p = self.pick("d")
        return "" if p is None else p

    def new_name(self):
        r = self.rng.random()
        if r < 0.85:
            return "n%d" % self.rng.randrange(40)
        if r < 0.92:
            return "".join(self.rng.choice("abc") for _ in range(self.rng.randrange(100, 256)))
        if r < 0.97:
            return self.rng.choice(["caf\u00e9", "sp ace", "x=y", "back\\slash", "\u2603", "..x", "-dash"]) + str(
                self.rng.randrange(5))
        return "h%08x" % self.rng.getrandbits(32)

    def data(self, n):
        if self.rng.random() < 0.3:
            return bytes([self.rng.randrange(256)]) * n
        return self.rng.randbytes(n)

    # ---- running one op on both trees ----
    def both(self, what, fn, *rel):
        """fn(abs paths...) on each root; results must agree."""
        out = []
        for root in self.roots:
            args = [os.path.join(root, r) if r != "" else root for r in rel]
            try:
                out.append(("ok", fn(*args)))
            except OSError as e:
                out.append(("err", errno.errorcode.get(e.errno, e.errno)))
        if out[0] != out[1]:
            raise Diverged("op %d %s %s: test %r, reference %r" % (self.ops, what, rel, out[0], out[1]))
        return out[0][0] == "ok", out[0][1]

    # ---- operations ----
    def op_create(self):
        d, n = self.pick_dir(), self.new_name()
        p = os.path.join(d, n)
        kind = self.rng.random()
        mode = self.rng.choice([0o644, 0o600, 0o755, 0o4755, 0o2644, 0o1777, self.rng.randrange(0o10000)])
        if kind < 0.55:
            payload = self.data(self.rng.choice([0, 1, 100, 3000, 4096, 5000, 70000]))

            def create(path):
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
                try:
                    os.write(fd, payload)
                finally:
                    os.close(fd)
            ok, _ = self.both("create", create, p)
            k = "f"
        elif kind < 0.75:
            ok, _ = self.both("mkdir", lambda path: os.mkdir(path, mode), p)
            k = "d"
        elif kind < 0.88:
            target = "".join(self.rng.choice("abcdef/") for _ in range(self.rng.choice([1, 20, 200, 1000])))
            ok, _ = self.both("symlink", lambda path: os.symlink(target, path), p)
            k = "l"
        elif kind < 0.96:
            ok, _ = self.both("mkfifo", lambda path: os.mkfifo(path, mode), p)
            k = "p"
        else:
            dev = os.makedev(self.rng.randrange(1, 300), self.rng.randrange(70000))
            t = self.rng.choice([stat.S_IFCHR, stat.S_IFBLK])
            ok, _ = self.both("mknod", lambda path: os.mknod(path, t | 0o600, dev), p)
            k = "c"
        if ok:
            self.add(p, k)

    def op_write(self):
        p = self.pick("f")
        if p is None:
            return
        r = self.rng.random()
        flags = os.O_WRONLY | (os.O_APPEND if r < 0.2 else 0) | (os.O_TRUNC if 0.2 <= r < 0.27 else 0)
        off = self.rng.choice([0, self.rng.randrange(100000), self.rng.randrange(4096) * 4096])
        payload = self.data(self.rng.choice([1, 17, 512, 4096, 4097, 9000, 65536]))

        def write(path):
            fd = os.open(path, flags)
            try:
                n = os.write(fd, payload) if flags & os.O_APPEND else os.pwrite(fd, payload, off)
                return n, os.fstat(fd).st_size
            finally:
                os.close(fd)
        self.both("write", write, p)

    def op_truncate(self):
        p = self.pick("f")
        if p is not None:
            size = self.rng.choice([0, self.rng.randrange(8192), self.rng.randrange(200000)])
            self.both("truncate", lambda path: os.truncate(path, size), p)

    def op_link(self):
        s = self.pick("fplc")
        if s is None:
            return
        p = os.path.join(self.pick_dir(), self.new_name())
        ok, _ = self.both("link", os.link, s, p)
        if ok:
            self.add(p, self.names[self.index[s]][1])

    def op_remove(self):
        p = self.pick()
        if p is None:
            return
        k = self.names[self.index[p]][1]
        wrong = self.rng.random() < 0.1
        if (k == "d") != wrong:
            ok, _ = self.both("rmdir", os.rmdir, p)
        else:
            ok, _ = self.both("unlink", os.unlink, p)
        if ok:
            self.remove(p)

    def op_rename(self):
        s = self.pick()
        if s is None:
            return
        if self.rng.random() < 0.3:
            t = self.pick() or self.new_name()
        else:
            t = os.path.join(self.pick_dir(), self.new_name())
        r = self.rng.random()
        flags = 0 if r < 0.6 else RENAME_NOREPLACE if r < 0.8 else RENAME_EXCHANGE
        ref_s, ref_t = os.path.join(self.roots[1], s), os.path.join(self.roots[1], t)
        same = os.path.lexists(ref_t) and os.lstat(ref_s).st_ino == os.lstat(ref_t).st_ino
        t_exists = t in self.index
        if flags:
            ok, _ = self.both("renameat2(%d)" % flags, lambda a, b: renameat2(a, b, flags), s, t)
        else:
            ok, _ = self.both("rename", os.rename, s, t)
        if not ok or same or s == t:
            return
        if flags == RENAME_EXCHANGE:
            tmp = "\0swap"
            self.move_prefix(s, tmp)
            self.move_prefix(t, s)
            self.move_prefix(tmp, t)
        else:
            if t_exists:
                self.remove(t)  # a replaced directory was empty
            self.move_prefix(s, t)

    def op_attr(self):
        p = self.pick(root_ok=True)
        if p is None:
            return
        k = self.names[self.index[p]][1] if p else "d"
        r = self.rng.random()
        if r < 0.35 and k != "l":
            mode = self.rng.randrange(0o10000)
            self.both("chmod", lambda path: os.chmod(path, mode), p)
        elif r < 0.6:
            uid, gid = self.rng.choice([0, 1000, 1234, 65534]), self.rng.choice([0, 100, 1000, 5678])
            self.both("chown", lambda path: os.chown(path, uid, gid, follow_symlinks=False), p)
        else:
            ns = (self.rng.randrange(-10**17, 2 * 10**18), self.rng.randrange(0, 2 * 10**18))
            self.both("utime", lambda path: os.utime(path, ns=ns, follow_symlinks=False), p)

    def op_xattr(self):
        p = self.pick("fd", root_ok=True)
        if p is None:
            return
        name = "user.x%d" % self.rng.randrange(5)
        if self.rng.random() < 0.3:
            self.both("removexattr", lambda path: os.removexattr(path, name), p)
        else:
            val = self.data(self.rng.randrange(0, 300))
            flags = self.rng.choice([0, os.XATTR_CREATE, os.XATTR_REPLACE])
            self.both("setxattr", lambda path: os.setxattr(path, name, val, flags), p)

    def op_read(self):
        p = self.pick("f")
        if p is not None:
            def read(path):
                with open(path, "rb") as f:
                    return f.read()
            self.both("read", read, p)

    def op_listdir(self):
        d = self.pick_dir()

        def ls(path):
            return sorted((n, self.kind_of(os.path.join(path, n))) for n in os.listdir(path))
        self.both("listdir", ls, d)

    def op_xattr_read(self):
        p = self.pick("fd", root_ok=True)
        if p is not None:
            self.both("listxattr", lambda path: sorted((n, os.getxattr(path, n)) for n in os.listxattr(path)), p)

    def op_orphan(self):
        p = self.pick("f")
        if p is None:
            return
        payload = self.data(self.rng.choice([10, 5000]))

        def orphan(path):
            fd = os.open(path, os.O_RDWR)
            try:
                os.unlink(path)
                os.pwrite(fd, payload, 100)
                return os.pread(fd, 200000, 0), os.fstat(fd).st_nlink
            finally:
                os.close(fd)
        ok, _ = self.both("unlink-while-open", orphan, p)
        if ok:
            self.remove(p)

    def commit(self):
        fd = os.open(self.roots[0], os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def run(self, nops, batch, remount_every=0, remount=None):
        full = [(self.op_create, 26), (self.op_write, 14), (self.op_truncate, 4), (self.op_link, 6),
                (self.op_remove, 14), (self.op_rename, 12), (self.op_attr, 8), (self.op_xattr, 6),
                (self.op_read, 4), (self.op_listdir, 2), (self.op_xattr_read, 2), (self.op_orphan, 2)]
        mutate = [(self.op_create, 20), (self.op_write, 25), (self.op_truncate, 10), (self.op_remove, 20),
                  (self.op_rename, 20), (self.op_read, 5)]
        table = full if self.mix == "full" else mutate
        fns = [f for f, _ in table]
        weights = [w for _, w in table]
        for self.ops in range(1, nops + 1):
            fn = self.rng.choices(fns, weights)[0]
            if len(self.names) > self.max_names and fn == self.op_create:
                fn = self.op_remove
            fn()
            if self.ops % batch == 0:
                self.commit()
            if remount and remount_every and self.ops % remount_every == 0:
                r = subprocess.run(remount, shell=True)
                if r.returncode:
                    raise Diverged("op %d: the remount command failed (exit %d)" % (self.ops, r.returncode))
        self.commit()


def main():
    args = sys.argv[1:]
    opts = {"--seed": 1, "--ops": 20000, "--batch": 500, "--max-names": 3000, "--mix": "full",
            "--remount-every": 0, "--remount": None}
    pos = []
    while args:
        a = args.pop(0)
        if a in opts:
            opts[a] = args.pop(0) if a in ("--mix", "--remount") else int(args.pop(0))
        else:
            pos.append(a)
    if len(pos) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    w = Work(pos[0], pos[1], opts["--seed"], opts["--max-names"], opts["--mix"])
    try:
        w.run(opts["--ops"], opts["--batch"], opts["--remount-every"], opts["--remount"])
    except Diverged as e:
        print("DIVERGED: %s" % e)
        sys.exit(1)
    print("done: %d ops, %d names" % (opts["--ops"], len(w.names)))


if __name__ == "__main__":
    main()
