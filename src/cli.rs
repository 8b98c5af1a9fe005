//! Command-line interface (clap). Each subcommand lives in its own module; this file
//! only declares the arguments.
