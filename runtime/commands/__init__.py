"""CLI modules of the subcommands that drive more than one package (each: `add_arguments(parser)`, `main(args)`)."""
