"""A small text-to-video model that really learned concepts, to measure unlearning end to end.

``world`` renders short clips of one coloured, moving shape, optionally carrying a trademark logo,
with captions from many templates; ``readers`` reads a clip's attributes back exactly; ``text``
wraps the packaged all-MiniLM-L6-v2 sentence encoder (token embeddings); ``dit`` is a tiny video
diffusion transformer whose layer names mirror Wan's; ``sampling`` is its flow-matching sampler;
``paraphrases`` checks which held-out wordings the frozen encoder itself understands.
"""
