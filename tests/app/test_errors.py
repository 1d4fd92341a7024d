"""How the app words a failure (app/errors.py)."""

import gradio as gr
import pytest


def test_a_failure_message_has_one_period():
    from app.errors import friendly

    with pytest.raises(gr.Error) as refused, friendly("Mapping"):
        raise ValueError("Block 99 has no router.")
    assert refused.value.message == ("Mapping failed: Block 99 has no router. Nothing was changed; check the input "
                                     "and try again.")
