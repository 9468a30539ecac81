"""Prompt learners through the frozen text tower: the shared prompt machinery
(``prompting``), CoOp, CoCoOp, DPLCLIP and LoCoOp."""
