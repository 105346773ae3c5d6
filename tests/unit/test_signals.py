import os
import signal

from dst_cli.signals import stop_on_signals


def test_a_signal_sets_the_flag_and_is_forwarded_to_the_earlier_handler():
    received = []
    earlier = signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))
    try:
        with stop_on_signals() as stop:
            assert not stop.requested
            os.kill(os.getpid(), signal.SIGUSR1)
            assert stop.requested and stop.signal_name == "SIGUSR1"
            assert received == []  # the earlier handler waits until our checkpoint is written
        stop.forward()
        assert received == [signal.SIGUSR1]
        assert signal.getsignal(signal.SIGUSR1) is not stop.handle  # ours is removed after the run
    finally:
        signal.signal(signal.SIGUSR1, earlier)


def test_default_handlers_are_not_forwarded():
    with stop_on_signals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
    stop.forward()  # SIG_DFL would kill the process: it must not be called
    assert stop.signal_name == "SIGTERM"
