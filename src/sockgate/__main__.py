from sockgate.cli import main

main()
