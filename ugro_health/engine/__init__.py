"""ugro_health.engine"""
