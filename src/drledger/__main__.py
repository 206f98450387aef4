from drledger.cli import main

main()
