"""Dataset makers: the embedded toy data (:mod:`flrp.collect.toy`) and simulator datasets
(:mod:`flrp.collect.collector`, ``flrp collect``). Submodules are imported on use (the simulator
collector needs stable-baselines3 and a simulator)."""
