"""A full disk without a mount: the file size limit (``ulimit -f``) makes writes past ``nbytes`` fail with EFBIG,
as a full disk fails them with ENOSPC (Python ignores SIGXFSZ, so the write raises instead of killing)."""
import contextlib
import resource


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """Writes past ``nbytes`` in any file fail with EFBIG inside the block (this process and its children)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def fill(folder) -> None:
    """Take every free byte of ``folder``'s file system, as another program would: a file ``filler`` in it."""
    with open(f'{folder}/filler', 'wb') as f:
        try:
            while True:
                f.write(bytes(1 << 20))
                f.flush()
        except OSError:
            pass
