"""The flows: what the product does with a platform chat and a task order. Rules decide; the
engine carries; no service is named here."""
