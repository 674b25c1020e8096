#!/usr/bin/env python3
"""gentree.py — write a seeded tree of files for the read-write suites.

    gentree.py [--seed N] [--files N] [--dirs N] [--big] DIR

DIR gets N files spread over N dirs (nested up to 6 deep): mostly small (inline in btrfs) and
block-sized files, some compressible text of 100-300 KiB, with --big a few random files of 1-3 MiB
and sparse files; user.* xattrs on about one in ten, hard links, symlinks and fifos. The same
seed gives the same tree (contents, names, modes, xattrs and mtimes).
"""
import os
import random
import sys


def main():
    args = sys.argv[1:]
    seed, nfiles, ndirs, big, pos = 1, 1000, 50, False, []
    while args:
        a = args.pop(0)
        if a == "--seed":
            seed = int(args.pop(0))
        elif a == "--files":
            nfiles = int(args.pop(0))
        elif a == "--dirs":
            ndirs = int(args.pop(0))
        elif a == "--big":
            big = True
        else:
            pos.append(a)
    if len(pos) != 1:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    top = pos[0]
    rng = random.Random(seed)
    dirs = [""]
    for i in range(ndirs):
        parent = rng.choice(dirs[-8:] if rng.random() < 0.6 else dirs)
        if parent.count("/") >= 5:
            parent = ""
        d = os.path.join(parent, "d%03d" % i)
        dirs.append(d)
    for d in dirs:
        os.makedirs(os.path.join(top, d), exist_ok=True)
    files = []
    text = b"".join(b"line %d of some compressible text\n" % i for i in range(10000))
    for i in range(nfiles):
        p = os.path.join(rng.choice(dirs), "f%05d" % i)
        full = os.path.join(top, p)
        r = rng.random()
        if r < 0.55:
            data = rng.randbytes(rng.randrange(0, 2048))
        elif r < 0.85:
            data = rng.randbytes(rng.choice([4096, 4097, 8192, 12288, 20000]))
        elif r < 0.97 or not big:
            n = rng.randrange(100, 300) * 1024
            off = rng.randrange(len(text) - n) if n < len(text) else 0
            data = (text * 2)[off:off + n]
        else:
            data = rng.randbytes(rng.randrange(1, 3) * 1024 * 1024 + rng.randrange(4096))
        with open(full, "wb") as f:
            f.write(data)
            if big and rng.random() < 0.01:
                f.seek(rng.randrange(1, 8) * 1024 * 1024)
                f.write(b"sparse tail")
        if rng.random() < 0.1:
            os.setxattr(full, "user.tag", b"v%d" % rng.randrange(1000))
            if rng.random() < 0.3:
                os.setxattr(full, "user.big", rng.randbytes(rng.randrange(200, 1500)))
        os.chmod(full, rng.choice([0o644, 0o600, 0o755, 0o640]))
        ns = rng.randrange(10**18, 17 * 10**17)
        os.utime(full, ns=(ns, ns))
        files.append(p)
    for i in range(nfiles // 20):
        src = rng.choice(files)
        p = os.path.join(rng.choice(dirs), "h%05d" % i)
        if not os.path.exists(os.path.join(top, p)):
            os.link(os.path.join(top, src), os.path.join(top, p))
    for i in range(nfiles // 20):
        p = os.path.join(rng.choice(dirs), "s%05d" % i)
        os.symlink(rng.choice(files), os.path.join(top, p))
    for i in range(max(1, nfiles // 200)):
        os.mkfifo(os.path.join(top, rng.choice(dirs), "p%03d" % i), 0o644)
    for d in dirs:
        if rng.random() < 0.1:
            os.setxattr(os.path.join(top, d), "user.dir", b"x" * rng.randrange(1, 100))


if __name__ == "__main__":
    main()
