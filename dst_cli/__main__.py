from dst_cli.cli import main

main()
