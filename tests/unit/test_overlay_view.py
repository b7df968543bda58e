"""The merged view as pure logic (spec/overlay-rules.md §5-§6), no FUSE.

A small in-memory reader stands in for the payload so that hypothesis can try
many trees; one test runs the same checks on a real packed image. The
property: for any app tree, host tree and set of rules, the view's nodes and
listings equal a model that builds the whole merged tree eagerly, rule by
rule, outermost first.
"""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appimg.errors import NotADirError, NotFoundError, PathError
from appimg.host.rules import Rule
from appimg.host.whitelist import covers
from appimg.services.view import APP, HOST, SYNTH, View

from ..helpers import appimg

# -- an in-memory stand-in for SquashfsReader --------------------------------------------

_MODES = {
    "dir": stat.S_IFDIR | 0o755,
    "file": stat.S_IFREG | 0o644,
    "symlink": stat.S_IFLNK | 0o777,
}


@dataclass(eq=False)
class FakeInode:
    kind: str
    number: int
    data: bytes = b""
    target: str = ""
    children: dict[str, FakeInode] = field(default_factory=dict)
    uid: int = 0
    gid: int = 0
    mtime: int = 1000
    nlink: int = 1
    rdev: int = 0

    @property
    def ref(self) -> int:
        return self.number

    @property
    def mode(self) -> int:
        return _MODES[self.kind]

    @property
    def size(self) -> int:
        return len(self.data) if self.kind == "file" else len(self.target)

    def is_dir(self) -> bool:
        return self.kind == "dir"


class FakeReader:
    """What View uses of SquashfsReader, over a dict of path -> ("dir",) | ("file", bytes) |
    ("symlink", target)."""

    class superblock:  # mirrors the real reader's attribute
        block_size = 4096
        xattr_id_table_start = (1 << 64) - 1

    def __init__(self, tree: dict[str, tuple]) -> None:
        self.root = FakeInode("dir", 1)
        count = 1
        for path in sorted(tree):
            count += 1
            kind, *rest = tree[path]
            parent = self.root
            *dirs, name = path.strip("/").split("/")
            for part in dirs:
                parent = parent.children[part]
            node = FakeInode(kind, count)
            if kind == "file":
                node.data = rest[0]
            elif kind == "symlink":
                node.target = rest[0]
            parent.children[name] = node

    def lookup_child(self, d: FakeInode, name: str) -> FakeInode:
        if d.kind != "dir":
            raise NotADirError(name)
        if name not in d.children:
            raise NotFoundError(name)
        return d.children[name]

    def lookup(self, path: str) -> FakeInode:
        node = self.root
        for part in [p for p in path.split("/") if p]:
            node = self.lookup_child(node, part)
        return node

    def iterdir(self, d: FakeInode):
        return iter(sorted(d.children.items(), key=lambda kv: kv[0].encode()))

    def read(self, inode: FakeInode, offset: int, size: int) -> bytes:
        return inode.data[offset : offset + size]

    def readlink(self, inode: FakeInode) -> str:
        return inode.target

    def xattrs(self, inode: FakeInode) -> dict[str, bytes]:
        return {}


# -- the model ---------------------------------------------------------------------------


def host_snapshot(rule: Rule, hidden: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """The host entries a rule shows, keyed by view path: walked without following symlinks,
    nothing if the rule's path goes through a symlink or does not exist."""
    path = Path(rule.path)
    # Every directory on the way to the rule's path must be a real directory.
    probe = Path("/")
    for part in path.parts[1:-1]:
        probe = probe / part
        if not probe.is_dir() or probe.is_symlink():
            return {}
    try:
        top = os.lstat(path)
    except OSError:
        return {}
    found: dict[str, tuple[str, str]] = {}

    def kind_of(st_mode: int) -> str:
        return "dir" if stat.S_ISDIR(st_mode) else "symlink" if stat.S_ISLNK(st_mode) else "file"

    def visit(host: Path, view: str, st_mode: int) -> None:
        if any(covers(h, str(host)) for h in hidden):  # policy denials hide everywhere
            return
        found[view] = (kind_of(st_mode), HOST)
        if stat.S_ISDIR(st_mode):
            for entry in os.scandir(host):
                visit(host / entry.name, f"{view}/{entry.name}",
                      entry.stat(follow_symlinks=False).st_mode)  # fmt: skip

    visit(path, rule.at, top.st_mode)
    return found


def linked_dir(rule: Rule, rules: list[Rule], hidden: tuple[str, ...]) -> Rule | None:
    """The rule as if its path were the directory its host symlink names (a merged-/usr
    host's /bin -> usr/bin), when that directory is granted; None otherwise."""
    if rule.mode == "replace" or not os.path.islink(rule.path):
        return None
    if not host_snapshot(rule, hidden):
        return None  # the link itself is not reachable
    target = os.path.normpath(os.path.join(os.path.dirname(rule.path), os.readlink(rule.path)))
    if not any(covers(r.path, target) for r in rules):
        return None
    behind = Rule(target, rule.at, rule.mode, rule.origin)
    snapshot = host_snapshot(behind, hidden)
    return behind if snapshot.get(rule.at, ("",))[0] == "dir" else None


def overlay(upper: dict, lower: dict, at: str) -> dict:
    """overlayfs on two trees keyed by path: the upper entry decides, directories merge."""
    result: dict = {}

    def children(tree: dict, path: str) -> set[str]:
        prefix = path.rstrip("/") + "/"
        return {p[len(prefix) :].split("/")[0] for p in tree if p.startswith(prefix)}

    def copy(tree: dict, path: str) -> None:
        result[path] = tree[path]
        for name in children(tree, path):
            copy(tree, f"{path}/{name}")

    def visit(path: str) -> None:
        top, low = upper.get(path), lower.get(path)
        if top is None:
            if low is not None:
                copy(lower, path)
            return
        result[path] = top
        if top[0] != "dir":
            return
        names = children(upper, path)
        if low is not None and low[0] == "dir":
            names |= children(lower, path)
            for name in names:
                visit(f"{path}/{name}")
        else:
            for name in names:
                copy(upper, f"{path}/{name}")

    visit(at)
    return result


def model(app: dict[str, tuple], rules: list[Rule]) -> dict[str, tuple[str, str]]:
    tree = {p: (v[0], APP) for p, v in app.items()}
    hidden = tuple(h for r in rules for h in r.hidden)
    for rule in sorted(rules, key=lambda r: r.at.count("/")):
        at = rule.at
        mine = {p: (v[0], APP) for p, v in app.items() if covers(at, p)}
        behind = linked_dir(rule, rules, hidden) if mine.get(at, ("",))[0] == "dir" else None
        host = host_snapshot(behind or rule, hidden)
        for p in [p for p in tree if covers(at, p)]:
            del tree[p]
        if rule.mode == "replace":
            tree.update(host)
        elif rule.mode == "under":
            tree.update(overlay(mine, host, at))
        else:
            tree.update(overlay(host, mine, at))
        parts = at.strip("/").split("/")
        for depth in range(1, len(parts)):
            ancestor = "/" + "/".join(parts[:depth])
            if tree.get(ancestor, ("",))[0] != "dir":
                # A synthesized directory: whatever was there (a non-directory) is gone.
                for p in [p for p in tree if p.startswith(ancestor + "/") and not covers(at, p)
                          and not any(covers(r.at, p) for r in rules)]:  # fmt: skip
                    del tree[p]
                tree[ancestor] = ("dir", SYNTH)
    return tree


def check_against_model(view: View, expected: dict[str, tuple[str, str]]) -> None:
    for path, (kind, source) in expected.items():
        node = view.node(path)
        assert (node.kind, node.source) == (kind, source), path
    dirs = ["/"] + [p for p, (kind, _) in expected.items() if kind == "dir"]
    for path in dirs:
        prefix = path.rstrip("/") + "/"
        want = sorted(p[len(prefix) :] for p in expected if p.startswith(prefix)
                      and "/" not in p[len(prefix) :])  # fmt: skip
        got = sorted(name for name, _ in view.listdir(path))
        assert got == want, path
        for name, node in view.listdir(path):
            assert (node.kind, node.source) == expected[prefix + name], prefix + name


# -- example-based ---------------------------------------------------------------------


@pytest.fixture
def host(tmp_path: Path) -> Path:
    h = tmp_path / "host"
    for rel, data in {
        "r/one": b"host one",
        "r/sub/two": b"host two",
        "u/clash": b"host clash",
        "u/host-only": b"h",
        "u/shared/h-inner": b"hi",
        "u/secret/key": b"never",
        "o/clash": b"host clash",
        "o/host-only": b"h",
        "o/shared/h-inner": b"hi",
        "file": b"a host file",
    }.items():
        (h / rel).parent.mkdir(parents=True, exist_ok=True)
        (h / rel).write_bytes(data)
    os.symlink("/etc", h / "u" / "escape")
    os.symlink("../../..", h / "u" / "up")
    os.symlink("r", h / "link-to-r")
    return h


APP_TREE: dict[str, tuple] = {
    "/r": ("dir",),
    "/r/app-only": ("file", b"hidden by replace"),
    "/u": ("dir",),
    "/u/clash": ("file", b"app clash"),
    "/u/app-only": ("file", b"a"),
    "/u/shared": ("dir",),
    "/u/shared/a-inner": ("file", b"ai"),
    "/o": ("dir",),
    "/o/clash": ("file", b"app clash"),
    "/o/app-only": ("file", b"a"),
    "/o/shared": ("dir",),
    "/o/shared/a-inner": ("file", b"ai"),
    "/etc": ("symlink", "../../../etc"),
    "/f": ("file", b"app file"),
}


def rules_for(h: Path) -> list[Rule]:
    return [
        Rule(f"{h}/r", "/r", "replace", "manifest"),
        Rule(f"{h}/u", "/u", "under", "manifest", hidden=(f"{h}/u/secret",)),
        Rule(f"{h}/o", "/o", "over", "manifest"),
        Rule(f"{h}/r", "/deep/new/place", "replace", "manifest"),
        Rule(f"{h}/file", "/f/inside", "replace", "manifest"),  # /f becomes a directory
        Rule(f"{h}/link-to-r/one", "/via-link", "replace", "manifest"),  # through a symlink
        Rule(f"{h}/link-to-r", "/a-link", "replace", "manifest"),  # ends in a symlink
    ]


def test_modes_and_synthesized_parents(host: Path) -> None:
    view = View(FakeReader(APP_TREE), rules_for(host))
    names = {p: sorted(n for n, _ in view.listdir(p)) for p in ("/", "/r", "/u", "/o")}
    assert names["/"] == ["a-link", "deep", "etc", "f", "o", "r", "u"]
    assert names["/r"] == ["one", "sub"]
    assert names["/u"] == ["app-only", "clash", "escape", "host-only", "shared", "up"]
    assert names["/o"] == ["app-only", "clash", "host-only", "shared"]
    assert sorted(n for n, _ in view.listdir("/u/shared")) == ["a-inner", "h-inner"]
    assert view.read(view.node("/u/clash"), 0, 100) == b"app clash"  # under: the app wins
    assert view.read(view.node("/o/clash"), 0, 100) == b"host clash"  # over: the host wins
    assert view.read(view.node("/deep/new/place/one"), 0, 100) == b"host one"
    for synth in ("/deep", "/deep/new", "/f"):
        assert view.node(synth).source == SYNTH and view.node(synth).kind == "dir"
    assert view.read(view.node("/f/inside"), 0, 100) == b"a host file"
    with pytest.raises(NotFoundError):
        view.node("/u/secret")  # hidden by the policy inside a granted path
    with pytest.raises(NotFoundError):
        view.node("/via-link")  # the rule's path goes through a host symlink
    assert view.node("/a-link").kind == "symlink"
    assert view.readlink(view.node("/a-link")) == "r"
    with pytest.raises(NotADirError):
        view.node("/o/clash/x")
    with pytest.raises(NotFoundError):
        view.node("/nothing")


def test_symlinks_stay_symlinks(host: Path) -> None:
    view = View(FakeReader(APP_TREE), rules_for(host))
    for path, target in (("/u/escape", "/etc"), ("/u/up", "../../.."), ("/etc", "../../../etc")):
        node = view.node(path)
        assert node.kind == "symlink" and view.readlink(node) == target
        with pytest.raises(PathError):
            view.listdir(path)
        with pytest.raises(NotADirError):
            view.node(path + "/passwd")


def test_a_host_link_to_a_granted_directory_merges_with_the_apps_directory(
    tmp_path: Path,
) -> None:
    """A merged-/usr host's /bin -> usr/bin under an app's own bin/: one directory, the
    app's entries over the host's (overlay-rules.md §6); an ungranted target stays a link."""
    h = tmp_path / "host"
    (h / "usr" / "bin").mkdir(parents=True)
    (h / "usr" / "bin" / "sh").write_bytes(b"host sh")
    (h / "usr" / "bin" / "tool").write_bytes(b"host tool")
    (h / "elsewhere").mkdir()
    os.symlink("usr/bin", h / "bin")
    os.symlink("elsewhere", h / "sbin")
    os.symlink(f"{h}/usr/bin", h / "abs")
    app = {"/bin": ("dir",), "/bin/tool": ("file", b"app tool"), "/bin/mine": ("file", b"m"),
           "/sbin": ("dir",), "/abs": ("dir",), "/abs/x": ("file", b"x")}  # fmt: skip
    rules = [
        Rule(f"{h}/usr", "/usr", "under", "profile host"),
        Rule(f"{h}/bin", "/bin", "under", "profile host"),
        Rule(f"{h}/sbin", "/sbin", "under", "profile host"),
        Rule(f"{h}/abs", "/abs", "over", "manifest"),
    ]
    view = View(FakeReader(app), rules)
    assert sorted(n for n, _ in view.listdir("/bin")) == ["mine", "sh", "tool"]
    assert view.read(view.node("/bin/tool"), 0, 100) == b"app tool"  # under: the app wins
    assert view.read(view.node("/bin/sh"), 0, 100) == b"host sh"
    assert view.node("/bin").source == APP
    assert sorted(n for n, _ in view.listdir("/abs")) == ["sh", "tool", "x"]  # absolute target
    assert view.read(view.node("/abs/tool"), 0, 100) == b"host tool"  # over: the host wins
    # /elsewhere is granted by no rule: the link's target is not shown, the app's sbin is.
    assert view.listdir("/sbin") == [] and view.node("/sbin").source == APP
    check_against_model(view, model(app, rules))
    # Without an app directory the host's link is shown as the link it is.
    bare = View(FakeReader({"/x": ("file", b"")}), rules)
    assert bare.node("/bin").kind == "symlink" and bare.readlink(bare.node("/bin")) == "usr/bin"


def test_host_changes_show_after_the_ttl(host: Path) -> None:
    view = View(FakeReader(APP_TREE), rules_for(host), host_ttl=0.0)
    assert "late" not in dict(view.listdir("/r"))
    (host / "r" / "late").write_bytes(b"new")
    assert "late" in dict(view.listdir("/r"))
    # A granted directory swapped for a symlink after the fact is shown as that symlink.
    os.rename(host / "r", host / "r-old")
    os.symlink("/etc", host / "r")
    assert view.node("/r").kind == "symlink"
    with pytest.raises(NotADirError):
        view.node("/r/passwd")


def test_real_image(host: Path, tmp_path: Path) -> None:
    """The same model check on a real packed payload."""
    app = tmp_path / "app"
    for path, value in APP_TREE.items():
        target = app / path.lstrip("/")
        if value[0] == "dir":
            target.mkdir(parents=True, exist_ok=True)
        elif value[0] == "file":
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(value[1])
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(value[1], target)
    (app / "bin").mkdir()
    (app / "bin" / "app").write_text("#!/bin/sh\n")
    (app / "bin" / "app").chmod(0o755)
    (app / "appimg.toml").write_text(
        'id = "org.example.View"\nname = "V"\nversion = "1"\nentrypoint = "bin/app"\n'
    )
    image = tmp_path / "v.appimg"
    appimg("pack", app, "-o", image)
    from appimg.format.image import Image

    tree = {**APP_TREE, "/bin": ("dir",), "/bin/app": ("file", b""), "/appimg.toml": ("file", b"")}
    with Image.open(image) as opened:
        rules = rules_for(host)
        view = View(opened.payload, rules)
        check_against_model(view, model(tree, rules))
        assert view.read(view.node("/o/shared/a-inner"), 0, 10) == b"ai"
        big = View(opened.payload, rules, cache_size=16)  # eviction keeps it correct
        check_against_model(big, model(tree, rules))


# -- the property ------------------------------------------------------------------------

names = st.sampled_from(["a", "b", "c"])


@st.composite
def trees(draw: Any, depth: int = 3) -> dict[str, tuple]:
    tree: dict[str, tuple] = {}

    def fill(prefix: str, level: int) -> None:
        for name in draw(st.sets(names, max_size=3)):
            path = f"{prefix}/{name}"
            kind = draw(st.sampled_from(["dir", "dir", "file", "symlink"] if level else ["file"]))
            if kind == "dir":
                tree[path] = ("dir",)
                fill(path, level - 1)
            elif kind == "file":
                tree[path] = ("file", path.encode())
            else:
                tree[path] = ("symlink", draw(st.sampled_from(["a", "../b", "/etc"])))

    fill("", depth)
    return tree


def materialise(root: Path, tree: dict[str, tuple]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for path in sorted(tree):
        target = root / path.lstrip("/")
        kind, *rest = tree[path]
        if kind == "dir":
            target.mkdir()
        elif kind == "file":
            target.write_bytes(rest[0])
        else:
            os.symlink(rest[0], target)


view_paths = st.lists(names, min_size=1, max_size=3).map(lambda p: "/" + "/".join(p))
host_paths = st.lists(names, min_size=0, max_size=2).map(lambda p: "/".join(p))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    app=trees(),
    host_tree=trees(),
    specs=st.lists(
        st.tuples(
            view_paths, host_paths, st.sampled_from(["replace", "under", "over"]), st.booleans()
        ),
        max_size=3,
        unique_by=lambda s: s[0],
    ),
)
def test_view_equals_the_model(app: dict, host_tree: dict, specs: list) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "host"
        materialise(root, host_tree)
        rules = []
        for at, sub, mode, hide in specs:
            path = str(root / sub) if sub else str(root)
            hidden = (str(Path(path) / "a"),) if hide else ()
            rules.append(Rule(path, at, mode, "manifest", hidden))
        view = View(FakeReader(app), rules)
        expected = model(app, rules)
        check_against_model(view, expected)
        for path in ("/a", "/a/b/c", "/c/c"):
            if path not in expected:
                with pytest.raises(PathError):
                    view.node(path)
