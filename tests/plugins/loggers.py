"""A tracker that fails in the middle of a run (a server gone away), as a user's own logger could."""
from dst_cli.loggers import Logger


class FailingLogger(Logger):
    def __init__(self, fail_at_epoch: int = 1):
        self.fail_at_epoch = fail_at_epoch
        self.rows = []

    def log(self, row: dict) -> None:
        if row["epoch"] >= self.fail_at_epoch:
            raise ConnectionError("tracking server gone")
        self.rows.append(row)
