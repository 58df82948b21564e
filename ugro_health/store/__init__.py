"""ugro_health.store"""
