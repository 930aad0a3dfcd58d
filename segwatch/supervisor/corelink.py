"""Moved to ``segwatch.runs.corelink`` (replay needs it too); this name stays for old imports."""
from segwatch.runs.corelink import (REPORT_SCHEMA, SafeState, config_error_type, config_from_dict,  # noqa: F401
                                    config_to_dict, finite, last_value, latest_eval_miou, load_config, new_state,
                                    policy_of, safe_int)
