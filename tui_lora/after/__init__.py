"""After training: chat with an adapter, evaluate it against its base model, merge it into the base.

loading.py finds what a run trained and loads it the way the run did; chat.py answers
conversations with it (console.py is the terminal around that); evaluate.py measures loss
and perplexity with and without the adapter; merge.py writes a model folder without peft;
push.py publishes the adapter or the merged model with a card (model_card.py) to a hub.
Nothing here is imported by the CLI or the TUI until one of those commands runs.
"""
