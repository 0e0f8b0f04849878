"""Writes a model file's bytes to disk through the page cache (+ fsync) and with O_DIRECT
(4 MiB aligned blocks, padded, then truncated), three times each, and prints wall and CPU
time. The probe behind reinit's direct writes (docs/bench-e2e.md).

    python3 benches/e2e/direct_write_probe.py /tmp/reinit-e2e/bert_base.onnx [OUT_DIR]
"""
import mmap
import os
import resource
import sys
import time

src = open(sys.argv[1], "rb").read()
target = os.path.join(sys.argv[2] if len(sys.argv) > 2 else "/tmp", "direct_write_probe.bin")
block = 4 << 20
aligned = mmap.mmap(-1, block)  # page-aligned memory, as O_DIRECT needs


def run(mode):
    if os.path.exists(target):
        os.unlink(target)
    os.sync()
    time.sleep(0.5)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if mode == "direct" else 0)
    fd = os.open(target, flags)
    for i in range(0, len(src), block):
        chunk = src[i : i + block]
        if mode == "direct":
            padded = (len(chunk) + 4095) // 4096 * 4096
            aligned[: len(chunk)] = chunk
            aligned[len(chunk) : padded] = bytes(padded - len(chunk))
            os.write(fd, memoryview(aligned)[:padded])
        else:
            os.write(fd, chunk)
    if mode == "direct":
        os.ftruncate(fd, len(src))
    t1 = time.perf_counter()
    os.fsync(fd)
    os.close(fd)
    t2 = time.perf_counter()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    print(f"{mode:9s} write {t1 - t0:.3f} s  fsync {t2 - t1:.3f} s  total {t2 - t0:.3f} s  cpu {cpu:.3f} s")


for _ in range(3):
    for mode in ("buffered", "direct"):
        run(mode)
os.unlink(target)
