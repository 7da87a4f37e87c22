"""Population training: ``Trainer(..., population=N)`` trains N members as one
compiled program (a ``vmap`` over a member axis of the state).

Member ``i`` trains exactly as ``Trainer(..., seed=seed + i)`` with its own
hyperparameter values would: its params (an init function called with the key of
``seed + i``), its dropout keys (``PRNGKey(seed + i)``), its shuffling order (the
data-order seed ``seed + i``) and its validation. The loop is the one of a single
model (``driver.loop``); what differs lives here:

- ``members``: the stacked initial state, per-member hyperparameters;
- ``placement``: whole members per device when their number allows, else
  data-parallel within members;
- ``blocks``: the compiled train and eval blocks, a loop over a block's batches
  around the member-vmapped step, with a per-member ``active`` mask (a stopped
  member's batches are all padding: no update, its state unchanged);
- ``source``: per-member shuffled blocks ``[members, slots, batch, ...]``;
- ``callbacks``: per-member copies of the callbacks that act per member, each
  seeing its member as a plain trainer (``MemberView``) and its own logs;
- ``history``: ``PopulationHistory`` (``history.members[i]``);
- ``trainer``: ``PopulationTrainer``, what ``Trainer(population=N)`` builds.
"""
