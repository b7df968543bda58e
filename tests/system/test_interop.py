"""Stock Linux tools understand the image: sfdisk, unsquashfs, veritysetup, losetup + mount."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ..helpers import appimg


def _info(image: Path) -> dict:
    return json.loads(appimg("inspect", "--json", image).stdout)


def test_sfdisk_lists_the_four_named_partitions(hello_image: Path) -> None:
    table = json.loads(
        subprocess.run(
            ["sfdisk", "--json", str(hello_image)], capture_output=True, check=True, text=True
        ).stdout
    )["partitiontable"]
    assert table["label"] == "gpt"
    names = [p["name"] for p in table["partitions"]]
    assert names == ["appimg-manifest", "appimg-payload", "appimg-verity", "appimg-signature"]
    info = _info(hello_image)
    for ours, theirs in zip(info["partitions"], table["partitions"], strict=True):
        assert ours["offset"] == theirs["start"] * 512
        assert ours["size"] == theirs["size"] * 512
        assert ours["type_guid"] == theirs["type"].lower()
    # sfdisk --verify finds nothing wrong with either GPT copy.
    check = subprocess.run(["sfdisk", "--verify", str(hello_image)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No errors detected" in check.stdout


def test_unsquashfs_lists_files_at_payload_offset(hello_image: Path) -> None:
    offset = _info(hello_image)["partitions"][1]["offset"]
    listing = subprocess.run(
        ["unsquashfs", "-o", str(offset), "-l", str(hello_image)],
        capture_output=True, check=True, text=True,
    ).stdout  # fmt: skip
    assert "squashfs-root/bin/hello" in listing
    assert "squashfs-root/share/applications/org.example.Hello.desktop" in listing


def _cut(image: Path, part: dict, dest: Path) -> Path:
    subprocess.run(
        ["dd", f"if={image}", f"of={dest}", "bs=4096", f"skip={part['offset'] // 4096}",
         f"count={part['size'] // 4096}", "status=none"],
        check=True,
    )  # fmt: skip
    return dest


def test_veritysetup_verify_accepts_the_tree(tmp_path: Path) -> None:
    # A payload big enough for a multi-level tree.
    from ..helpers import write_app

    tree = write_app(tmp_path / "tree")
    (tree / "blob").write_bytes(os.urandom(2 << 20))
    image = tmp_path / "app.appimg"
    appimg("pack", tree, "-o", image, "--compression", "gzip")
    info = _info(image)
    parts = {p["name"]: p for p in info["partitions"]}
    data = _cut(image, parts["appimg-payload"], tmp_path / "payload")
    hashes = _cut(image, parts["appimg-verity"], tmp_path / "verity")
    root = info["verity"]["root_hash"]
    ok = subprocess.run(["veritysetup", "verify", str(data), str(hashes), root],
                        capture_output=True, text=True)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    dump = subprocess.run(["veritysetup", "dump", str(hashes)], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip
    assert info["verity"]["salt"] in dump
    # The same check fails on a changed payload byte.
    with data.open("r+b") as f:
        f.seek(5000)
        f.write(b"X")
    bad = subprocess.run(["veritysetup", "verify", str(data), str(hashes), root],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode != 0


def _loop_available() -> bool:
    return os.path.exists("/dev/loop-control") and bool(shutil.which("losetup"))


@pytest.mark.root
@pytest.mark.skipif(not _loop_available(), reason="needs loop devices")
def test_losetup_partitions_mount_with_kernel_squashfs(hello_image: Path, tmp_path: Path) -> None:
    loop = subprocess.run(
        ["losetup", "--find", "--show", "--partscan", "--read-only", str(hello_image)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        if shutil.which("udevadm"):
            subprocess.run(["udevadm", "settle"], capture_output=True)
        part = Path(f"{loop}p2")
        if not part.exists():
            # A kernel built without CONFIG_EFI_PARTITION does not scan the GPT itself;
            # partx reads it in user space and adds the partitions (BLKPG), as users do.
            subprocess.run(["partx", "--add", loop], check=True, capture_output=True)
        for _ in range(50):
            if part.exists():
                break
            time.sleep(0.1)
        blkid = subprocess.run(["blkid", "-o", "export", str(part)], capture_output=True,
                               text=True)  # fmt: skip
        assert "TYPE=squashfs" in blkid.stdout
        subprocess.run(["mount", "-t", "squashfs", "-o", "ro", str(part), str(mnt)], check=True)
        try:
            assert (mnt / "bin" / "hello").read_text().startswith("#!/usr/bin/env sh")
            assert (mnt / "share" / "doc" / "hello" / "README").exists()
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)
