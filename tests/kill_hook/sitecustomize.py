"""A test's stand-in for the OOM killer, kept out of the product (issue 28).

Python imports ``sitecustomize`` at start-up from the first folder on ``sys.path`` that has one,
so every process started with this folder on ``PYTHONPATH`` (the Ray workers of a build that
``tests/test_ingest_worker_death.py`` starts) runs this before anything else. With
``$CROSSROADS_TEST_KILL_VIDEO`` set it wraps ``ingest.clips.stream_video_samples`` before any
shard builder imports it: the process that starts that video sends itself SIGKILL; with
``$CROSSROADS_TEST_KILL_ONCE=FILE`` only while FILE does not exist (it creates it).
"""
import os

KILL_VIDEO_ENV = "CROSSROADS_TEST_KILL_VIDEO"
KILL_ONCE_ENV = "CROSSROADS_TEST_KILL_ONCE"


def _first_time(marker: str) -> bool:
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


if os.environ.get(KILL_VIDEO_ENV):
    import signal

    import ingest.clips

    _stream_video_samples = ingest.clips.stream_video_samples

    def stream_video_samples(path, entry, *args, **kwargs):
        if entry.video_id == os.environ.get(KILL_VIDEO_ENV):
            marker = os.environ.get(KILL_ONCE_ENV)
            if not marker or _first_time(marker):
                os.kill(os.getpid(), signal.SIGKILL)
        return _stream_video_samples(path, entry, *args, **kwargs)

    ingest.clips.stream_video_samples = stream_video_samples
