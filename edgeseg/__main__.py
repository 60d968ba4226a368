from edgeseg.cli import main

# The program name shell completion keys on, the same as the installed `edgeseg` command.
main(prog_name="edgeseg")
