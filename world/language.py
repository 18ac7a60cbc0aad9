"""The world's language in one namespace: questions, oracle, captions, prompts and the word list."""
from world.captions import caption, caption_of
from world.prompts import (CATEGORIES, ObjectSpec, Prompt, PromptSpec, checks_for_prompt, parse_prompt,
                           prompt_for_scene, sample_prompt, scene_for_prompt, scene_satisfies)
from world.questions import FAMILIES, VQAItem, oracle_answer, question_family, questions_for_scene
from world.vocabulary import NUMBER_WORDS, RELATIONS, WORDS

__all__ = [
    "CATEGORIES", "FAMILIES", "NUMBER_WORDS", "RELATIONS", "WORDS", "ObjectSpec", "Prompt", "PromptSpec",
    "VQAItem", "caption", "caption_of", "checks_for_prompt", "oracle_answer", "parse_prompt", "prompt_for_scene",
    "question_family", "questions_for_scene", "sample_prompt", "scene_for_prompt", "scene_satisfies",
]
