"""How large and deep what a job brings may be: its files and what a request renders to. No
imports: every reader takes them without loading a parser it does not need."""

MAX_DEPTH = 64  # nesting, of a job file and of the JSON it names (a schema, a dataset's row)
MAX_RENDERED_BYTES = 32 << 20  # what a request's messages may render to (a row's, a grader's)
