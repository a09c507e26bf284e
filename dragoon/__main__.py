from dragoon.cli import main

main()
