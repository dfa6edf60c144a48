from retrain_assets.simulate.traffic import FEATURES, TARGET, USAGE_FEATURES, USAGE_TARGET, TrafficScenario, generate_traffic, model_config

__all__ = ["FEATURES", "TARGET", "USAGE_FEATURES", "USAGE_TARGET", "TrafficScenario", "generate_traffic", "model_config"]
