"""Moved to :mod:`flrp.nn.critic_losses` (it holds the IQL reward-critic losses as well as the HJ
feasibility ones); these names stay importable from here."""

from flrp.nn.critic_losses import CriticTerms, behaviour_hj_value, hj_feasibility_terms, iql_reward_terms

__all__ = ["CriticTerms", "behaviour_hj_value", "hj_feasibility_terms", "iql_reward_terms"]
