from neurointerp.cli.app import main

main()
