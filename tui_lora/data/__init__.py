"""Data: records in -> tokenised, labelled examples out, with a report of what was used and why not.

sources.py reads files, folders, hub data sets and the builtin sample into records (a broken line
is a bad record, not a crash); mapping.py renames a layout of the user's own into a known one;
formats.py turns each record into a clean conversation (belle, messages, sharegpt, alpaca);
encode.py renders it with the model's own chat template and finds the exact tokens to train;
prepare.py runs that over the whole set with datasets.map (cached) and counts; preview.py is
`tui-lora data`. Nothing here imports the engine; the schema's choice lists come from config.
"""
