from dst_cli.cli import run

run()
