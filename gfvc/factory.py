"""Build the codec a condition names: a registered codec, a variant of one, or an external program.

The one place that turns a name of a condition's ``codecs`` list into a codec object, for the runner
and for `gfvc encode` / `gfvc decode`: names in the condition's ``external:`` section become
:class:`gfvc.external.ExternalCodec`; names in ``variants:`` become their base codec with the variant's
stage choices (its own ``generative`` section) and the variant's name in records; any other name is
looked up in the codec registry.
"""
from __future__ import annotations

import dataclasses

from gfvc.codec import Codec, Environment, get_codec
from gfvc.condition import Condition, VariantSpec
from gfvc.external import ExternalCodec


def variant_condition(condition: Condition, variant: VariantSpec) -> Condition:
    """The condition a variant's codec sees: the variant's stage choices in its ``generative`` section."""
    return dataclasses.replace(condition, generative=dataclasses.replace(condition.generative, **variant.overrides()))


def build_codec(name: str, condition: Condition, env: Environment) -> Codec:
    """The codec named ``name`` under ``condition`` (UnknownName lists the registered codecs)."""
    if name in condition.external:
        return ExternalCodec(name, condition.external[name], condition, env)
    if name in condition.variants:
        v = condition.variants[name]
        codec = get_codec(v.codec)(variant_condition(condition, v), env)
        codec.set_variant(name, v)
        return codec
    return get_codec(name)(condition, env)


def base_codec_name(name: str, condition: Condition) -> str:
    """The registered codec behind ``name`` (itself for a registered or external codec)."""
    v = condition.variants.get(name)
    return v.codec if v is not None else name
