"""ugro_health.transport"""
