"""Strict JSON field types: a number is not a string or a boolean, a boolean is not 1 or "yes"."""
from __future__ import annotations

from marshmallow import ValidationError, fields


class StrictInteger(fields.Integer):
    """An integer that refuses booleans and numeric strings."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("Not a valid integer.")
        return super()._deserialize(value, attr, data, **kwargs)


class StrictBoolean(fields.Boolean):
    """true or false, not "yes", 1 or "false"."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise ValidationError("Not a valid boolean.")
        return value


class StrictFloat(fields.Float):
    """A number that refuses booleans and numeric strings."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError("Not a valid number.")
        return super()._deserialize(value, attr, data, **kwargs)
